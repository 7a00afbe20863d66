package pgqueue

import (
	"context"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/testenv"
)

// TestDepthUsesIndexes: Depth (every /metrics scrape and GET /fleet) must
// not read every completed request kept for the retention period.
func TestDepthUsesIndexes(t *testing.T) {
	pg := testenv.Postgres(t)
	q := open(t, pg.NewDatabase(t), "x", 0, nil, nil)
	ctx := context.Background()
	if _, err := q.pool.Exec(ctx, `INSERT INTO falocal_requests (id, endpoint, app, status, created_at, completed_at)
			SELECT 'c'||g, 'e', 'e', 'COMPLETED', now(), now() FROM generate_series(1, 50000) g;
		INSERT INTO falocal_requests (id, endpoint, app, status, created_at)
			SELECT 'q'||g, 'e', 'e', 'IN_QUEUE', now() FROM generate_series(1, 30) g;
		ANALYZE falocal_requests`); err != nil {
		t.Fatal(err)
	}
	rows, err := q.pool.Query(ctx, "EXPLAIN "+depthQuery)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var l string
		rows.Scan(&l)
		plan = append(plan, l)
	}
	rows.Close()
	if p := strings.Join(plan, "\n"); strings.Contains(p, "Seq Scan") {
		t.Errorf("Depth reads the whole table:\n%s", p)
	}
	if queued, running := q.Depth(); queued != 30 || running != 0 {
		t.Errorf("depth %d %d", queued, running)
	}
}
