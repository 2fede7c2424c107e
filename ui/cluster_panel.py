"""The Data page's Ray cluster box: shown only when the server has ``CLUSTERMINE_RAY_ADDRESS`` set.

Jobs started from the app then run their encoding and vote on that cluster (the worker gets
``--ray ADDRESS``); progress and Cancel work as for local jobs, because the driver (the worker
process on this server) writes ``progress.json`` and reads the cancel flag. The cluster is asked for
its nodes by a short-lived CLI process (``clustermine.workflows.distributed.query_cluster``): the web server
itself never imports Ray.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from clustermine.workflows.distributed import RayClusterError, query_cluster, ray_address

from .text import md_code, md_escape


@st.cache_data(ttl=60, show_spinner="Asking the Ray cluster for its nodes…")
def _cluster(address: str) -> tuple[dict | None, str]:
    try:
        return query_cluster(address), ""
    except RayClusterError as exc:
        return None, str(exc)


def cluster_box(executed_on: dict | None = None) -> None:
    """Where jobs run. ``executed_on``: a run's ``run.json`` record of the cluster it ran on."""
    if executed_on:
        info = executed_on.get("ray") or {}
        st.caption(f":material/hub: encoding and vote ran on the Ray cluster at {md_code(info.get('address', '?'))}: "
                   f"{len(info.get('nodes', []))} nodes, {info.get('cpus', 0):g} CPUs, {info.get('gpus', 0):g} GPUs")
    address = ray_address()
    if address is None:
        return
    info, error = _cluster(address)
    if info is None:
        st.error(f"Ray cluster {md_code(address)} (CLUSTERMINE_RAY_ADDRESS) cannot be used: {md_escape(error, None)}. "
                 "Jobs started now will fail; unset CLUSTERMINE_RAY_ADDRESS to run them on this server.",
                 icon=":material/cloud_off:")
        if st.button("Ask the cluster again", key="ray_retry"):
            _cluster.clear()
            st.rerun()
        return
    nodes = info.get("nodes", [])
    st.info(f"Jobs run on the Ray cluster at {md_code(info['address'])}: **{len(nodes)} node"
            f"{'s' if len(nodes) != 1 else ''}, {info['cpus']:g} CPUs, {info['gpus']:g} GPUs**. Encoding and the "
            "vote run there; clustering runs here. Every node must see the images under the same path "
            "(a shared folder; uploads are saved in this server's runs folder).", icon=":material/hub:")
    with st.expander("Cluster nodes", expanded=False):
        st.dataframe(pd.DataFrame([{"address": n["address"], "CPUs": n["cpus"], "GPUs": n["gpus"],
                                    "role": "head" if n.get("is_head") else "worker", "node id": n["node_id"][:16]}
                                   for n in nodes]), hide_index=True, width="stretch")
