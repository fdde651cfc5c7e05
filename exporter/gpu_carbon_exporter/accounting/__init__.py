"""All accounting, in one layer: energy to carbon, water and embodied carbon, the double-count rules
between whole-node meters and their parts, and the split of every GPU's joule among its jobs.

``devices``: each device's counters, step by step, and the figures derived from a sample (emission
rate, the node's rest power). ``jobs``: the split of one GPU's accounting step among the jobs
holding it, and the jobs' water. The meter samples and calls these; the attribution engine keeps who
holds what and calls ``jobs``; the collector only renders what they computed.
"""
