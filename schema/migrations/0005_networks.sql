-- Version 5: network types (bridge, vlan), reservations, MTU, persistence; a NIC's default route.
ALTER TABLE networks ADD COLUMN type TEXT NOT NULL DEFAULT 'bridge' CHECK (type IN ('bridge', 'vlan'));
ALTER TABLE networks ADD COLUMN reserved TEXT NOT NULL DEFAULT '[]';
ALTER TABLE networks ADD COLUMN mtu INTEGER;
ALTER TABLE networks ADD COLUMN persistent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vm_nics ADD COLUMN is_default INTEGER NOT NULL DEFAULT 0;
