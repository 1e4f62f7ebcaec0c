-- Version 3: every version of a VM's domain XML, with who made it, when, the diff and why.
CREATE TABLE vm_xml_history (
    id INTEGER PRIMARY KEY,
    vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    version INTEGER NOT NULL CHECK (version > 0),
    xml TEXT NOT NULL,
    diff TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,                -- create, edit, revert, host
    author TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (vm_id, version)
);
