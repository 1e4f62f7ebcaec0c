-- Version 4 (issue 7): domains a host runs that the inventory does not know.
-- Refreshed by every heartbeat; a row disappears when the domain does or when it is adopted.
CREATE TABLE unmanaged_domains (
    uuid TEXT PRIMARY KEY,               -- the libvirt domain UUID
    host_id TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE INDEX unmanaged_domains_host ON unmanaged_domains(host_id);
