select * from {{ source('lake', 'raw_triplets') }}
