-- One view over every dataset partition of the lake table relabel_decisions; `dataset` is the hive partition.
select * from {{ lake_table('relabel_decisions') }}
