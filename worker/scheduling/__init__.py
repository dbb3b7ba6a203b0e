"""When a job's upstream is asked next: the poll chain's maths (``polling``), what recent completions taught
(``latency``), the sparse safety poll of jobs whose upstream calls back (``safety_poll``), and a job's schedule
built from the three (``learned``)."""
