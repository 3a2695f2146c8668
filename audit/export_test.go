package audit

// OnGroupCommit sets the hook a Group's leader runs before each commit.
func OnGroupCommit(g *Group, f func(batch int)) { g.beforeCommit = f }

// GroupQueued is how many callers wait in g's queue (the leader's batch
// not counted once taken).
func GroupQueued(g *Group) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}
