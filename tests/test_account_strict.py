"""The account store's parameter, edited by hand in the console, is read strictly: a key given twice,
a value that is not an object, or nesting beyond the limit is one sentence, never ignored or a
traceback (on the old code a list was silently no account defaults, and the last duplicate won)."""

from __future__ import annotations

import pytest

from coiled_jupyter.errors import AccountStoreUnreadable
from coiled_jupyter.session import effective_settings

PARAMETER = "/coiled-jupyter/backend-options"


@pytest.mark.parametrize(
    "value, says",
    [
        (
            '{"ingress": [{"ports": [8786], "cidr": "10.1.0.0/16"}], '
            '"ingress": [{"ports": [8786], "cidr": "0.0.0.0/0"}]}',
            "key 'ingress' twice",
        ),
        ('[{"ports": [8786], "cidr": "10.1.0.0/16"}]', "does not hold a JSON object"),
        ("[" * 3000 + "]" * 3000, "deeper than"),
        ("ingress: oops", "does not hold a JSON object"),
    ],
)
def test_a_broken_parameter_is_one_sentence(cloud, value, says):
    cloud.ssm.put_parameter(Name=PARAMETER, Value=value, Type="String", Overwrite=True)
    with pytest.raises(AccountStoreUnreadable) as caught:
        effective_settings()
    message = str(caught.value)
    assert says in message and PARAMETER in message and "\n" not in message
