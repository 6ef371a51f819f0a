//go:build unix && !linux

package controlplane

import "syscall"

// sysProcAttr puts the subprocess in its own process group, so that a
// terminal's Ctrl-C reaches only the parent, which then stops it in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// dieWithParent returns binary: only Linux has a parent-death signal.
func dieWithParent(_, binary string) string { return binary }
