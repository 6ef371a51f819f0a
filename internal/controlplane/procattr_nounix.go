//go:build !unix

package controlplane

import (
	"os/exec"
	"syscall"
)

// sysProcAttr has nothing to add on this platform.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// signalGroup kills the process: other platforms have no process groups
// or SIGTERM.
func signalGroup(cmd *exec.Cmd, _ syscall.Signal) {
	if cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}

// dieWithParent returns binary: only Linux has a parent-death signal.
func dieWithParent(_, binary string) string { return binary }
