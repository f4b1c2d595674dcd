-- Customers who moved between segments: each change of a customer's segment in the SCD2
-- history (segment_membership_history), with the segment before and after and the day it
-- took effect. A customer's first period is not a move; leaving the segmentation (no current
-- row) is not counted here either.
with periods as (
    select
        model_name,
        customer_id,
        valid_from,
        model_version,
        segment_id,
        segment_name,
        lag(segment_id) over w as previous_segment_id,
        lag(segment_name) over w as previous_segment_name,
        lag(model_version) over w as previous_model_version
    from {{ source('segmentation', 'segment_membership_history') }}
    window w as (partition by model_name, customer_id order by valid_from)
)
select
    model_name,
    customer_id,
    valid_from as moved_on,
    previous_model_version,
    previous_segment_id,
    previous_segment_name,
    model_version,
    segment_id,
    segment_name
from periods
where previous_segment_id is not null
  and previous_segment_id <> segment_id
