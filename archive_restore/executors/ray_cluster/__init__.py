"""Jobs on a Ray cluster: the driver's loop (``driver``), the pool of worker actors (``pool``), what the
driver hands out and takes back (``work``) and the worker side (``worker``). Imported only when a job asks
for ``--executor ray``."""
