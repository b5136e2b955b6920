-- One view over every dataset partition of the lake table raw_triplets_quarantine; `dataset` is the hive partition.
select * from {{ lake_table('raw_triplets_quarantine') }}
