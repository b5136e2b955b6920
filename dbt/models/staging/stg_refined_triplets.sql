-- One view over every dataset partition of the lake table refined_triplets; `dataset` is the hive partition.
select * from {{ lake_table('refined_triplets') }}
