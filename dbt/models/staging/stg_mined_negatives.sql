select * from {{ source('lake', 'mined_negatives') }}
