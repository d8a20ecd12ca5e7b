"""Operator tools over the logs Aegis and Envoy write.

readers     decision-log and Envoy access-log lines → dicts; ``--since`` windows
tail        ``aegis logs tail``: both logs joined on decision_id, one coloured row per call
report      ``aegis report``: the decision split, shadow outcomes, rules, agents, tools, approvals
html        the report as one self-contained HTML page with inline SVG charts
commands    argument parsing for ``aegis logs`` and ``aegis report``
"""
