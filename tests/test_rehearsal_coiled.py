"""A Coiled cluster rehearsed on its own ports (the default kind): its own module, so that no other
rehearsal of this process is up while it starts one (a process's namespaces have one set of names)."""

from __future__ import annotations

import dask.config
import pytest

from coiled_jupyter import session
from coiled_jupyter.rehearsal.namespaces import unavailable

REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def test_a_coiled_cluster_is_rehearsed_on_443_with_its_dashboard_on_the_same_port(
    sandbox, dask_config, monkeypatch
):
    """The default kind: Coiled's scheduler and HTTPS dashboard share 443; the rehearsal serves the
    scheduler there and says that the dashboard's verdict is the scheduler's."""
    from coiled_jupyter.rehearsal import rehearse as module

    monkeypatch.setitem(dask.config.config["coiled-jupyter"], "cluster-kind", "coiled")
    session.set_settings([{"ports": [22, 443], "cidr": "10.1.0.0/16"}], cluster="coiled-443")
    session.apply("coiled-443")
    try:
        payload = session.rehearse("coiled-443").to_payload()
    finally:
        module.stop()
    found = {(r["address"], r["port"]): (r["predicted"], r["measured"]) for r in payload["rows"]}
    assert found["10.1.0.5", "443 (scheduler)"] == ("yes", "yes")
    assert found["198.51.100.7", "443 (scheduler)"] == ("no", "no")
    assert not [port for _, port in found if "dashboard" in port]
    assert payload["notes"][0].startswith("the dashboard shares port 443 with the scheduler")
