-- Customers per segment at every as_of of every segmentation, with the share of that date's
-- customers: the trend chart a BI tool draws. Segment ids are per model version (retrains may
-- issue new ids), so the key carries model_name, model_version and segment_id.
select
    model_name,
    as_of,
    model_version,
    segment_id,
    any_value(segment_name) as segment_name,
    count(*) as customers,
    count(*) / sum(count(*)) over (partition by model_name, as_of) as share
from {{ source('segmentation', 'segment_membership') }}
group by model_name, as_of, model_version, segment_id
