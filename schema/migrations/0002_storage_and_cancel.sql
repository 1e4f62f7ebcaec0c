-- Version 2: where a VM's disks live, and cancellable tasks.
ALTER TABLE vms ADD COLUMN storage TEXT NOT NULL DEFAULT 'local' CHECK (storage IN ('local', 'shared'));
ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
