"""The choreography map: a live graph of the flow and a timeline per workflow instance.

Served by the sidecar at ``/map`` on its HTTP port (an operator page, not a public one):
``graph`` builds the static layers from the routes, the workflow classes and their declared
emits (the AsyncAPI source), ``layout`` places them in layers (Sugiyama), ``svg`` draws them,
``recording`` keeps what the sidecar saw (live counters, a bounded ring), ``timeline`` joins a
workflow's records with its history in Temporal, and ``pages`` answers the HTTP requests.
"""
