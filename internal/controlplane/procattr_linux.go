//go:build linux

package controlplane

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// sysProcAttr puts the subprocess in its own process group, so that a
// terminal's Ctrl-C reaches only the parent, which then stops it in order,
// and asks the kernel to kill it if the parent dies without calling Stop
// (e.g. `go test` timing out).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// dieWithParent returns the path of a small wrapper script, written into
// dir, that runs binary with the kernel's parent-death signal set (through
// util-linux's setpriv), so that a process started by envtest, whose
// SysProcAttr cannot be set, is killed too if this process dies without
// calling Stop. The wrapper execs, so the process keeps the wrapper's pid
// and envtest's signals reach it. Without setpriv, it returns binary.
func dieWithParent(dir, binary string) string {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return binary
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %s --pdeathsig KILL -- %s \"$@\"\n", shellQuote(setpriv), shellQuote(binary))
	path := filepath.Join(dir, filepath.Base(binary))
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		return binary
	}
	return path
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
