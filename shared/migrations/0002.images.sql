-- depends: 0001.auth
-- Image records. Names are per user: two users may both own web:1. Reports are filled by the worker.
CREATE TABLE images (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text NOT NULL,
    tag             text NOT NULL,
    status          text NOT NULL DEFAULT 'pending_upload'
                    CHECK (status IN ('pending_upload', 'uploaded', 'processing', 'ready', 'rejected', 'failed')),
    reason          text,
    progress        jsonb,
    object_key      text NOT NULL,
    upload_bytes    bigint,
    docker_image_id text,
    reference       text,
    inspection      jsonb,
    scan            jsonb,
    optimization    jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name, tag)
);
CREATE INDEX images_owner_page_idx ON images (owner_id, created_at DESC, id DESC);
