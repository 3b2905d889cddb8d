"""The rehearsal: a security group enforced with packets, on this machine, before the cloud is touched.

The group as the sandbox holds it is translated into an nftables ruleset (:mod:`.nft`) and loaded in
front of a real ``distributed`` scheduler in network namespaces linked only to each other
(:mod:`.namespaces`); each source that matters connects for real, and the measured verdict is set
beside the one :mod:`coiled_jupyter.reach` predicts (:mod:`.rehearse`).
"""
