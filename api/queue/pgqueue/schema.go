package pgqueue

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// schema holds the migrations, NNN_name.sql, applied in order; a released
// one is never edited, only followed by a new one.
//
//go:embed schema/*.sql
var schema embed.FS

// Advisory lock keys (any constants, unique within the database).
const (
	lockSchema = 0x66616c6f63616c01 // migrations
	lockSubmit = 0x66616c6f63616c02 // the queue-length check and insert
)

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	names, err := fs.Glob(schema, "schema/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var ms []migration
	for i, n := range names {
		base := strings.TrimPrefix(n, "schema/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("migration %s: want version %d", base, i+1)
		}
		b, err := schema.ReadFile(n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{v, base, string(b)})
	}
	return ms, nil
}

// migrate brings the schema to the newest version. The transaction-scoped
// advisory lock makes nodes starting together wait for the first one,
// then find nothing left to do.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(lockSchema)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS falocal_schema (version integer NOT NULL)"); err != nil {
			return err
		}
		var have int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM falocal_schema").Scan(&have); err != nil {
			return err
		}
		if have > len(ms) {
			return fmt.Errorf("the database's schema is version %d, newer than this program's %d", have, len(ms))
		}
		for _, m := range ms[have:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
		}
		if len(ms) > have {
			if _, err := tx.Exec(ctx, "DELETE FROM falocal_schema"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "INSERT INTO falocal_schema (version) VALUES ($1)", len(ms)); err != nil {
				return err
			}
		}
		return nil
	})
}
