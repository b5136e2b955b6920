-- One view over every dataset partition of the lake table judge_audit; `dataset` is the hive partition.
select * from {{ lake_table('judge_audit') }}
