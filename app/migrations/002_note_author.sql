-- Expand only: a new column with a default, so the release still live (which does not know it)
-- keeps inserting notes while this one starts.
ALTER TABLE notes ADD COLUMN author text NOT NULL DEFAULT 'anonymous';
