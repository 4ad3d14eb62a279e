-- Whose rule made each cloud-bound message: each data subject has its own share of a
-- destination's queue (a tenant's flood drops the tenant's oldest messages, never the
-- owner's), and shredding a tenancy deletes the messages its rules made.
ALTER TABLE outbox ADD COLUMN subject TEXT NOT NULL DEFAULT 'owner';
CREATE INDEX outbox_by_subject ON outbox (destination, subject, seq);
