//go:build linux

package main

import "syscall"

// sysProcAttr puts celadon in its own process group, so that a terminal's
// Ctrl-C reaches only the demo, which then stops everything in order, and
// has the kernel stop celadon if the demo dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
