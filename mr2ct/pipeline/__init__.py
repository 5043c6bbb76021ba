"""What the entry points share: the run dir record and its loggers (``run``), and the stages a run goes
through, from prepared data to the scored test sets (``stages``)."""
