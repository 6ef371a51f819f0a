//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// signalGroup sends sig to the process group led by cmd's process (see
// sysProcAttr), falling back to the process alone.
func signalGroup(cmd *exec.Cmd, sig syscall.Signal) {
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil {
		_ = cmd.Process.Signal(sig)
	}
}
