package controllers

import "time"

// SetReadyPoll sets how often a syncer waiting for SyncOptions.Ready asks
// again, and returns a function restoring it.
func SetReadyPoll(d time.Duration) (restore func()) {
	old := readyPoll
	readyPoll = d
	return func() { readyPoll = old }
}
