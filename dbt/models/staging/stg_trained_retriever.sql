-- One view over every dataset partition of the lake table trained_retriever; `dataset` is the hive partition.
select * from {{ lake_table('trained_retriever') }}
