"""Jobs that survive a crash: the SQLite job store (``store``), the loop that runs a job's items through
it (``runner``) and the repair of a damaged database (``repair``)."""
