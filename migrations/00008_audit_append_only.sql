-- The audit log as the serving role sees it: append only. kluis serves as a
-- role that owns nothing (`kluis migrate` grants it what serving needs, from
-- migrations/grants.go); it may INSERT audit entries and read the chain, and
-- nothing more. Everything else the log needs happens here, in functions
-- owned by the migrating role: the time of an entry (the database's clock,
-- whatever the client sends), queueing it for the sealer, sealing (the hash
-- of each link is computed here), and the retention purge of old entries,
-- which decides by itself what may go and writes the checkpoint with the
-- count it purged.
--
-- Each SECURITY DEFINER function pins its search_path (pg_catalog first, so
-- no operator or function can be shadowed; pg_temp last, so no temporary
-- table of the caller can stand in for an audit table) and names every
-- table by schema; EXECUTE is revoked from PUBLIC, and `kluis migrate`
-- grants it to the serving role only where grants.go says so.

-- +goose Up

-- The time of an entry is the database's: a writer cannot date an entry in
-- the past (old enough to be purged at once) or in the future.
ALTER TABLE audit_entries ALTER COLUMN occurred_at SET DEFAULT statement_timestamp();

-- +goose StatementBegin
CREATE FUNCTION audit_stamp() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    NEW.occurred_at := statement_timestamp();
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_entries_stamp BEFORE INSERT ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_stamp();

-- Queueing a new entry for the sealer runs as the owner: the serving role may
-- only read audit_pending, so it can neither drop an entry from the queue
-- (leaving it unsealed and unnoticed) nor queue what is not there.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION audit_enqueue() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO public.audit_pending (seq) VALUES (NEW.seq);
    RETURN NEW;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION audit_enqueue() FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_stamp() FROM PUBLIC;

-- One field of a link's hash: its length in bytes (8 bytes, big-endian) and
-- its UTF-8 bytes, exactly as compliance/chain.go's entryHash writes it.
-- This function and audit_link_body have no SET clause, so that the planner
-- inlines them into audit_seal's query (a SET clause costs a configuration
-- change per call, ten per entry); they run under audit_seal's pinned
-- search_path, name only pg_catalog's functions, and have no privilege of
-- their own to abuse.
-- +goose StatementBegin
CREATE FUNCTION audit_field(v text) RETURNS bytea LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.int8send(pg_catalog.octet_length(pg_catalog.convert_to(v, 'UTF8'))::bigint)
        || pg_catalog.convert_to(v, 'UTF8')
$$;
-- +goose StatementEnd

-- What a link's hash covers after the previous hash and the position: the
-- entry's seq, its time (Unix microseconds) and every stored field. The hash
-- is SHA-256 over 'kluis-audit-v1', a zero byte, the previous hash, the
-- position (8 bytes, big-endian) and this; compliance/chain.go computes the
-- same in Go to verify, an independent implementation that must agree (the
-- tests seal here and verify there).
-- +goose StatementBegin
CREATE FUNCTION audit_link_body(e public.audit_entries) RETURNS bytea LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.int8send(e.seq)
        || pg_catalog.int8send((extract(epoch FROM e.occurred_at) * 1000000)::bigint)
        || public.audit_field(e.actor_kind) || public.audit_field(e.actor) || public.audit_field(e.action)
        || public.audit_field(e.target) || public.audit_field(e.outcome)
        || CASE WHEN e.subject_pseudonym IS NULL THEN '\x00'::bytea
                ELSE '\x01'::bytea || public.audit_field(e.subject_pseudonym) END
        || public.audit_field(e.request_id) || public.audit_field(e.details::text)
$$;
-- +goose StatementEnd

-- Sealing: chains up to max_entries pending entries, in seq order, after the
-- chain's head (or the newest checkpoint, once retention purged every link),
-- and returns how many it chained. One sealer at a time across instances
-- (the advisory lock compliance/chain.go names sealerLock); another caller
-- gets 0 at once. The caller chooses nothing but the batch size.
-- +goose StatementBegin
CREATE FUNCTION audit_seal(max_entries integer) RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    head_pos  bigint;
    head_hash bytea;
    r         record;
    positions bigint[] := '{}';
    seqs      bigint[] := '{}';
    prevs     bytea[] := '{}';
    hashes    bytea[] := '{}';
BEGIN
    IF max_entries IS NULL OR max_entries < 1 OR max_entries > 10000 THEN
        RAISE EXCEPTION 'audit_seal: max_entries must be between 1 and 10000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pg_try_advisory_xact_lock(118113570484993) THEN
        RETURN 0;
    END IF;
    SELECT c.pos, c.hash INTO head_pos, head_hash FROM public.audit_chain c ORDER BY c.pos DESC LIMIT 1;
    IF NOT FOUND THEN
        SELECT k.pos, k.hash INTO head_pos, head_hash FROM public.audit_checkpoints k ORDER BY k.pos DESC LIMIT 1;
        IF NOT FOUND THEN
            head_pos := 0;
            head_hash := decode(repeat('00', 32), 'hex');
        END IF;
    END IF;
    -- Each entry's fields are encoded by the query (set-based); the loop
    -- only chains them, since each hash covers the one before.
    FOR r IN
        SELECT a.seq, public.audit_link_body(a) AS body FROM public.audit_entries a
        WHERE a.seq IN (SELECT p.seq FROM public.audit_pending p ORDER BY p.seq LIMIT max_entries)
        ORDER BY a.seq
    LOOP
        head_pos := head_pos + 1;
        positions := positions || head_pos;
        seqs := seqs || r.seq;
        prevs := prevs || head_hash;
        head_hash := sha256('\x6b6c7569732d61756469742d763100'::bytea -- 'kluis-audit-v1' and a zero byte
            || head_hash || int8send(head_pos) || r.body);
        hashes := hashes || head_hash;
    END LOOP;
    -- One insert for the batch: far cheaper than a row at a time.
    INSERT INTO public.audit_chain (pos, entry_seq, prev_hash, hash, sealed_at)
        SELECT l.pos, l.seq, l.prev, l.hash, now() FROM unnest(positions, seqs, prevs, hashes) AS l (pos, seq, prev, hash);
    DELETE FROM public.audit_pending p WHERE p.seq = ANY (seqs);
    RETURN cardinality(seqs);
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION audit_seal(integer) FROM PUBLIC;

-- The retention purge of audit entries: the oldest links and their entries,
-- up to max_entries, behind a checkpoint this function writes (with the
-- count it purged). It decides what may go: links whose entry is older than
-- keep (never less than 365 days, PCI DSS 10.5.1, whatever the caller asks),
-- stopping at the first link that is younger or names a subject under a
-- legal hold, since the chain can only lose its head. Returns how many it
-- purged and the positions purged (NULL when none).
-- +goose StatementBegin
CREATE FUNCTION audit_purge(keep interval, max_entries integer)
    RETURNS TABLE (entries bigint, from_pos bigint, to_pos bigint)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    cutoff   timestamptz;
    stop_pos bigint;
    n        bigint;
    lo_pos   bigint;
    hi_pos   bigint;
    hi_seq   bigint;
    hi_hash  bytea;
    hi_at    timestamptz;
    seqs     bigint[];
    deleted  bigint;
BEGIN
    IF max_entries IS NULL OR max_entries < 1 OR max_entries > 100000 THEN
        RAISE EXCEPTION 'audit_purge: max_entries must be between 1 and 100000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    cutoff := now() - greatest(coalesce(keep, interval '365 days'), interval '365 days');
    -- The sealer's lock keeps the chain still while its head is cut.
    PERFORM pg_advisory_xact_lock(118113570484993);
    SELECT coalesce(min(c.pos), 0) INTO stop_pos
        FROM public.audit_chain c JOIN public.audit_entries a ON a.seq = c.entry_seq
        WHERE a.occurred_at >= cutoff
           OR a.subject_pseudonym IN (SELECT h.subject_pseudonym FROM public.legal_holds h WHERE h.lifted_at IS NULL)
           OR (a.actor_kind = 'user' AND a.actor IN (SELECT h.subject_pseudonym FROM public.legal_holds h WHERE h.lifted_at IS NULL));
    SELECT array_agg(x.entry_seq ORDER BY x.pos), count(*), min(x.pos), max(x.pos)
        INTO seqs, n, lo_pos, hi_pos
        FROM (SELECT c.pos, c.entry_seq FROM public.audit_chain c
              WHERE stop_pos = 0 OR c.pos < stop_pos ORDER BY c.pos LIMIT max_entries) x;
    IF n = 0 THEN
        RETURN QUERY SELECT 0::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    SELECT c.entry_seq, c.hash, a.occurred_at INTO hi_seq, hi_hash, hi_at
        FROM public.audit_chain c JOIN public.audit_entries a ON a.seq = c.entry_seq WHERE c.pos = hi_pos;
    INSERT INTO public.audit_checkpoints (pos, hash, entry_seq, occurred_at, purged)
        VALUES (hi_pos, hi_hash, hi_seq, hi_at, n);
    DELETE FROM public.audit_chain c WHERE c.pos <= hi_pos;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    IF deleted <> n THEN
        RAISE EXCEPTION 'audit_purge: the chain below position % is not contiguous', hi_pos USING ERRCODE = 'data_corrupted';
    END IF;
    DELETE FROM public.audit_entries a WHERE a.seq = ANY (seqs);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    IF deleted <> n THEN
        RAISE EXCEPTION 'audit_purge: entries and links disagree' USING ERRCODE = 'data_corrupted';
    END IF;
    RETURN QUERY SELECT n, lo_pos, hi_pos;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION audit_purge(interval, integer) FROM PUBLIC;

-- +goose Down
DROP FUNCTION audit_purge(interval, integer);
DROP FUNCTION audit_seal(integer);
DROP FUNCTION audit_link_body(audit_entries);
DROP FUNCTION audit_field(text);
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION audit_enqueue() RETURNS trigger LANGUAGE plpgsql SECURITY INVOKER AS $$
BEGIN
    INSERT INTO audit_pending (seq) VALUES (NEW.seq);
    RETURN NEW;
END
$$;
-- +goose StatementEnd
ALTER FUNCTION audit_enqueue() RESET search_path;
GRANT EXECUTE ON FUNCTION audit_enqueue() TO PUBLIC;
DROP TRIGGER audit_entries_stamp ON audit_entries;
DROP FUNCTION audit_stamp();
ALTER TABLE audit_entries ALTER COLUMN occurred_at DROP DEFAULT;
