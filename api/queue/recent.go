package queue

import (
	"encoding/json"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// Recent returns up to limit durable requests, newest first, that keep
// says to keep (nil keeps all): queued and running ones from memory,
// completed ones from memory or disk. Inputs are left out (they can be
// megabytes); Get has them. Sync runs (ephemeral) are not listed.
func (q *Queue) Recent(limit int, keep func(id string) bool) ([]Record, error) {
	seen := map[string]bool{}
	var out []Record
	add := func(r Record) {
		if seen[r.ID] || r.Ephemeral || (keep != nil && !keep(r.ID)) {
			return
		}
		seen[r.ID] = true
		r.Input = nil
		out = append(out, r)
	}
	q.mu.Lock()
	for _, e := range q.live {
		r := e.rec
		r.Logs = append([]LogEntry(nil), e.rec.Logs...)
		add(r)
	}
	q.mu.Unlock()
	if q.db != nil {
		err := q.tx(false, func(tx *bolt.Tx) error {
			return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
				if seen[string(k)] {
					return nil
				}
				var r Record
				if json.Unmarshal(v, &r) != nil {
					return nil // a damaged record is Get's to report
				}
				add(r)
				return nil
			})
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].Seq > out[j].Seq
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
