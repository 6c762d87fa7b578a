"""Building a patch store: the plan (pure), the shard writer, incremental builds."""
