package pgqueue

// crash makes the node behave as if its process died: no more claims,
// heartbeats, maintenance or writes; its runners' results are dropped.
func (q *Queue) crash() {
	q.crashed.Store(true)
	q.mu.Lock()
	if !q.draining {
		q.draining = true
		close(q.done)
	}
	q.mu.Unlock()
	q.stopRun()
}
