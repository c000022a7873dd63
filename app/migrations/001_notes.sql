-- The notes the sample app keeps: its one table.
CREATE TABLE notes (
    id serial PRIMARY KEY,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
