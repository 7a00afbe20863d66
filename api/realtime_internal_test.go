package api

import "time"

// SetRealtimeIdle sets the idle limit of realtime connections; the function
// returned restores it.
func SetRealtimeIdle(d time.Duration) func() {
	old := realtimeIdle.Swap(int64(d))
	return func() { realtimeIdle.Store(old) }
}
