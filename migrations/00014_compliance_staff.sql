-- Compliance staff's workflow (issue 18): a pending erasure request can be
-- rejected (by another staff member) or cancelled (by its requester), each
-- with a reason; a needs_attention erasure can be completed as
-- completed_with_exceptions by two staff (one acknowledges, another
-- completes); and the requests and holds can be listed newest first.

-- +goose Up

-- closed_*: who rejected or cancelled the request, when and why (a
-- reference, as every reason). exceptions_*: the two staff who completed a
-- needs_attention run with exceptions.
ALTER TABLE erasure_requests
    ADD COLUMN closed_by text,
    ADD COLUMN closed_at timestamptz,
    ADD COLUMN close_reason text CHECK (close_reason IS NULL OR length(close_reason) BETWEEN 1 AND 500),
    ADD COLUMN exceptions_acknowledged_by text,
    ADD COLUMN exceptions_acknowledged_at timestamptz,
    ADD COLUMN exceptions_completed_by text;

-- A rejected or cancelled request was never approved.
ALTER TABLE erasure_requests DROP CONSTRAINT IF EXISTS erasure_requests_check1;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_approved_past_approval
    CHECK ((status IN ('pending_approval', 'rejected', 'cancelled')) = (approved_by IS NULL));
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_closed_named
    CHECK ((status IN ('rejected', 'cancelled')) = (closed_by IS NOT NULL AND closed_at IS NOT NULL AND close_reason IS NOT NULL));
-- The four eyes, in the database too: the requester never rejects (they
-- cancel), and only the requester cancels.
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_rejected_by_another
    CHECK (status <> 'rejected' OR closed_by <> requested_by);
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_cancelled_by_requester
    CHECK (status <> 'cancelled' OR closed_by = requested_by);
-- completed_with_exceptions needs two different staff members.
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_acknowledged_named
    CHECK ((exceptions_acknowledged_by IS NULL) = (exceptions_acknowledged_at IS NULL));
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_exceptions_by_two
    CHECK ((status = 'completed_with_exceptions') = (exceptions_completed_by IS NOT NULL)
           AND (exceptions_completed_by IS NULL
                OR (exceptions_acknowledged_by IS NOT NULL AND exceptions_completed_by <> exceptions_acknowledged_by)));
-- A closed request lets go of the subject's internal id, as a completed
-- one does: it names them by pseudonym only, and a new request can be made.
ALTER TABLE erasure_requests DROP CONSTRAINT IF EXISTS erasure_requests_subject_until_done;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_subject_until_done
    CHECK ((status IN ('completed', 'completed_with_exceptions', 'rejected', 'cancelled')) = (erased_subject_id IS NULL));

-- The lists page newest first by keyset.
CREATE INDEX erasure_requests_listed ON erasure_requests (requested_at DESC, id DESC);
CREATE INDEX legal_holds_listed ON legal_holds (created_at DESC, id DESC);

-- +goose Down
DROP INDEX IF EXISTS legal_holds_listed;
DROP INDEX IF EXISTS erasure_requests_listed;
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_subject_until_done;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_subject_until_done
    CHECK ((status IN ('completed', 'completed_with_exceptions')) = (erased_subject_id IS NULL));
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_exceptions_by_two;
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_acknowledged_named;
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_cancelled_by_requester;
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_rejected_by_another;
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_closed_named;
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_approved_past_approval;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_check1 CHECK ((status = 'pending_approval') = (approved_by IS NULL));
ALTER TABLE erasure_requests
    DROP COLUMN exceptions_completed_by,
    DROP COLUMN exceptions_acknowledged_at,
    DROP COLUMN exceptions_acknowledged_by,
    DROP COLUMN close_reason,
    DROP COLUMN closed_at,
    DROP COLUMN closed_by;
