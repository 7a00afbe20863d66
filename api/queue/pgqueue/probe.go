package pgqueue

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Probed is what Probe found in a shared queue's database.
type Probed struct {
	Schema  int // the database's schema version (0: no server has started on it yet)
	Want    int // this program's
	Queued  int
	Running int
	Nodes   int // servers seen alive in the last minute
}

// Probe connects to the database at dsn and reports what a server would
// find there, changing nothing: for 'falocal doctor'.
func Probe(ctx context.Context, dsn string) (Probed, error) {
	var p Probed
	ms, err := migrations()
	if err != nil {
		return p, err
	}
	p.Want = len(ms)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return p, err
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM falocal_schema").Scan(&p.Schema)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table: a fresh database
		return p, nil
	}
	if err != nil {
		return p, err
	}
	if p.Schema > p.Want {
		return p, fmt.Errorf("the database's schema is version %d, newer than this program's %d", p.Schema, p.Want)
	}
	err = conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'IN_QUEUE'), count(*) FILTER (WHERE status = 'IN_PROGRESS')
		FROM falocal_requests`).Scan(&p.Queued, &p.Running)
	if err != nil {
		return p, err
	}
	err = conn.QueryRow(ctx, "SELECT count(*) FROM falocal_nodes WHERE seen > now() - interval '1 minute'").Scan(&p.Nodes)
	return p, err
}
