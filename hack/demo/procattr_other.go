//go:build unix && !linux

package main

import "syscall"

// sysProcAttr puts celadon in its own process group, so that a terminal's
// Ctrl-C reaches only the demo, which then stops everything in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
