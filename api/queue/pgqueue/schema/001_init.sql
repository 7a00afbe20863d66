-- Requests: one row each, from submission until Sweep deletes it.
CREATE TABLE falocal_requests (
	id text PRIMARY KEY,
	seq bigserial NOT NULL, -- arrival order: first come, first served
	endpoint text NOT NULL,
	app text NOT NULL,
	priority integer NOT NULL DEFAULT 0,
	status text NOT NULL,
	input bytea,
	input_bytes integer NOT NULL DEFAULT 0,
	ephemeral boolean NOT NULL DEFAULT false,
	stream boolean NOT NULL DEFAULT false,
	origin text NOT NULL DEFAULT '',
	cdn text NOT NULL DEFAULT '',
	host text NOT NULL DEFAULT '',
	accepted_by text NOT NULL DEFAULT '', -- the node whose caller waits (sync runs)
	logs jsonb NOT NULL DEFAULT '[]',
	files text[] NOT NULL DEFAULT '{}',
	-- bytea, not jsonb: the model's output is returned byte for byte
	outcome bytea,
	inference_time double precision NOT NULL DEFAULT 0,
	worker text, -- the node running it (or that ran it last)
	lease_until timestamptz,
	attempts integer NOT NULL DEFAULT 0,
	cancel_requested boolean NOT NULL DEFAULT false,
	start_deadline timestamptz,
	webhook text NOT NULL DEFAULT '',
	webhook_done boolean NOT NULL DEFAULT false,
	webhook_claim_until timestamptz,
	partial bytea,
	partial_seq bigint NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL,
	started_at timestamptz,
	completed_at timestamptz
);

-- The claim query and positions.
CREATE INDEX falocal_requests_queued ON falocal_requests (priority, seq) WHERE status = 'IN_QUEUE';
-- The reaper.
CREATE INDEX falocal_requests_leases ON falocal_requests (lease_until) WHERE status = 'IN_PROGRESS';
-- Webhook recovery.
CREATE INDEX falocal_requests_webhooks ON falocal_requests (webhook_claim_until)
	WHERE status = 'COMPLETED' AND webhook <> '' AND NOT webhook_done;
-- Sweep and Recent.
CREATE INDEX falocal_requests_completed ON falocal_requests (completed_at) WHERE status = 'COMPLETED';
CREATE INDEX falocal_requests_created ON falocal_requests (created_at);

-- Nodes: every server process of the fleet, renewed by its heartbeat.
CREATE TABLE falocal_nodes (
	name text PRIMARY KEY,
	role text NOT NULL,
	endpoints text[], -- NULL: runs any endpoint
	resident text[] NOT NULL DEFAULT '{}',
	info jsonb NOT NULL DEFAULT '{}',
	running integer NOT NULL DEFAULT 0,
	lease_seconds double precision NOT NULL,
	seen timestamptz NOT NULL
);

-- Notifications are sent by the database on commit, so no writer can
-- forget one and none is sent for a rolled back change.
CREATE FUNCTION falocal_requests_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status OR NEW.logs IS DISTINCT FROM OLD.logs
		OR NEW.partial_seq IS DISTINCT FROM OLD.partial_seq THEN
		PERFORM pg_notify('falocal_changed', NEW.id);
	END IF;
	IF NEW.status = 'IN_QUEUE' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'IN_QUEUE') THEN
		PERFORM pg_notify('falocal_work', NEW.endpoint);
	END IF;
	IF TG_OP = 'UPDATE' AND NEW.cancel_requested AND NOT OLD.cancel_requested THEN
		PERFORM pg_notify('falocal_cancel', NEW.id);
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER falocal_requests_notify AFTER INSERT OR UPDATE ON falocal_requests
	FOR EACH ROW EXECUTE FUNCTION falocal_requests_notify();
