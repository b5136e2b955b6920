select * from {{ source('lake', 'raw_passages') }}
