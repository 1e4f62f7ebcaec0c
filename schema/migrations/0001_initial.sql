-- labcloud inventory, version 1.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    created_at TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT
);

CREATE TABLE join_tokens (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_by INTEGER REFERENCES users(id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    host_id TEXT
);

CREATE TABLE hosts (
    id TEXT PRIMARY KEY,                 -- libvirt host UUID
    name TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL,
    agent_port INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('up', 'down', 'maintenance')),
    cert_fingerprint TEXT NOT NULL,
    vcpus INTEGER NOT NULL DEFAULT 0,
    memory_mib INTEGER NOT NULL DEFAULT 0,
    disk_free_gib REAL NOT NULL DEFAULT 0,
    disk_total_gib REAL NOT NULL DEFAULT 0,
    reserved_memory_mib INTEGER NOT NULL DEFAULT 0,
    cpu_ratio REAL NOT NULL DEFAULT 4.0,
    ram_ratio REAL NOT NULL DEFAULT 1.0,
    disk_ratio REAL NOT NULL DEFAULT 1.0,
    facts TEXT NOT NULL DEFAULT '{}',
    last_seen TEXT,
    joined_at TEXT NOT NULL
);

CREATE TABLE images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    source_format TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    virtual_size_bytes INTEGER NOT NULL DEFAULT 0,
    cloud_init INTEGER NOT NULL DEFAULT 1,
    os TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL CHECK (state IN ('importing', 'available', 'error')),
    created_at TEXT NOT NULL
);

CREATE TABLE flavors (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    vcpus INTEGER NOT NULL CHECK (vcpus > 0),
    memory_mib INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_gib INTEGER NOT NULL CHECK (disk_gib > 0)
);

CREATE TABLE networks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    bridge TEXT NOT NULL,
    cidr TEXT NOT NULL,
    gateway TEXT,
    dns TEXT NOT NULL DEFAULT '[]',
    range_start TEXT NOT NULL,
    range_end TEXT NOT NULL,
    vlan_id INTEGER,
    interface TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE vms (
    id TEXT PRIMARY KEY,                 -- also the libvirt domain UUID
    name TEXT NOT NULL UNIQUE,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    host_id TEXT REFERENCES hosts(id),
    image_id TEXT REFERENCES images(id),
    flavor_id INTEGER REFERENCES flavors(id),
    vcpus INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    disk_gib INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    state TEXT NOT NULL,
    domain_xml TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE vm_nics (
    id INTEGER PRIMARY KEY,
    vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    network_id INTEGER NOT NULL REFERENCES networks(id),
    mac TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL,
    UNIQUE (vm_id, idx)
);

-- One row per address in use: the UNIQUE constraint is what makes double
-- allocation impossible, whatever the application code does.
CREATE TABLE ip_allocations (
    id INTEGER PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id),
    address TEXT NOT NULL,
    vm_id TEXT REFERENCES vms(id) ON DELETE CASCADE,
    allocated_at TEXT NOT NULL,
    UNIQUE (network_id, address)
);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    progress INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    result TEXT,
    request_id TEXT NOT NULL,
    user_id INTEGER REFERENCES users(id),
    vm_id TEXT,
    vm_name TEXT,
    host_id TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX tasks_vm ON tasks(vm_id, state);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    username TEXT,
    action TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT,
    result TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    remote_addr TEXT,
    request_id TEXT
);
