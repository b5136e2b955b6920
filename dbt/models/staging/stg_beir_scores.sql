-- One view over every dataset partition of the lake table beir_scores; `dataset` is the hive partition.
select * from {{ lake_table('beir_scores') }}
