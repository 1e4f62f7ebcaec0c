"""The agent's adoption verbs on libvirt's test:///default driver (one shared in-process state: clean up)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from hostagent.adopt import Adoption
from hostagent.errors import VerbError
from hostagent.hypervisor import Hypervisor
from hostagent.storage import Storage, _volume_xml

SHA = "cd" * 32


@pytest.fixture
def host() -> Iterator[dict[str, Any]]:
    """A test:/// connection with labcloud's pool (the driver's default-pool) and a cached base image."""
    hv = Hypervisor("test:///default")
    pool = hv.conn.storagePoolLookupByName("default-pool")
    base = pool.createXML(_volume_xml(f"base-{SHA}.qcow2", 1 << 30, "qcow2"), 0)
    made: list[Any] = [base]
    domains: list[libvirt.virDomain] = []

    def domain(disk_name: str, backing: bool = True, bridge: str = "br0") -> str:
        uid = str(uuid.uuid4())
        vol = pool.createXML(_volume_xml(disk_name.replace("UUID", uid), 4 << 30, "qcow2",
                                         backing=(base.path(), "qcow2") if backing else None), 0)
        made.append(vol)
        xml = (f"<domain type='test'><name>ByHand-{uid[:4]}</name><uuid>{uid}</uuid><memory unit='MiB'>512</memory>"
               "<vcpu>2</vcpu><os><type>hvm</type></os><devices><disk type='file' device='disk'>"
               f"<source file='{vol.path()}'/><target dev='vda' bus='virtio'/></disk><interface type='bridge'>"
               f"<mac address='52:54:00:AA:bb:{len(made):02x}'/><source bridge='{bridge}'/></interface></devices>"
               "</domain>")
        domains.append(hv.conn.defineXML(xml))
        return uid

    yield {"adoption": Adoption(hv, Storage(hv, "default-pool", "/default-pool")), "domain": domain}
    for d in domains:
        d.undefine()
    for v in made:
        v.delete(0)
    hv.close()


def test_inspect_reads_size_disk_and_nics_and_adopt_writes_metadata(host: dict[str, Any]) -> None:
    uid = host["domain"]("UUID-root.qcow2")
    facts = host["adoption"].inspect(uid)
    assert facts["problems"] == []
    assert (facts["vcpus"], facts["memory_mib"], facts["disk_gib"], facts["image_sha256"]) == (2, 512, 4, SHA)
    assert facts["nics"] == [{"mac": "52:54:00:aa:bb:02", "type": "bridge", "bridge": "br0"}]
    assert facts["labcloud"] is None
    out = host["adoption"].adopt(uid, uid, "alice")
    assert out["labcloud"] == {"vm_id": uid, "owner": "alice", "created_by": "labcloud-adoption"}
    assert host["adoption"].adopt(uid, uid, "alice")["labcloud"]["vm_id"] == uid  # idempotent


def test_disks_that_cannot_migrate_are_named_as_problems(host: dict[str, Any]) -> None:
    uid = host["domain"]("plain-UUID.qcow2", backing=False)
    problems = host["adoption"].inspect(uid)["problems"]
    assert len(problems) == 1 and "overlay on a cached labcloud base image" in problems[0]
    with pytest.raises(VerbError, match="cannot adopt"):
        host["adoption"].adopt(uid, uid, "alice")
