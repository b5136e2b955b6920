-- One view over every dataset partition of the lake table retrieval_report; `dataset` is the hive partition.
select * from {{ lake_table('retrieval_report') }}
