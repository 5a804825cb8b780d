import pytest

from backend.task_types import UnsupportedConfig, task_type_for

DIGITS = """<View><Image name="image" value="$image"/>
<Choices name="digit" toName="image" choice="single"><Choice value="0"/><Choice value="1"/>
<Choice value="2" alias="two"/></Choices></View>"""


def test_image_classification_is_parsed_with_labels_in_config_order():
    schema = task_type_for(DIGITS)
    assert schema.from_name == "digit" and schema.to_name == "image"
    assert schema.image_key == "image"
    assert schema.labels == ("0", "1", "two")  # alias is what Label Studio stores in results


@pytest.mark.parametrize(
    "config, reason",
    [
        ("", "no labeling config"),
        ("<View><Image", "not valid XML"),
        (
            '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/>'
            '<Choice value="b"/></Choices></View>',
            "image classification",
        ),
        (
            '<View><Image name="i" value="$img"/><RectangleLabels name="r" toName="i">'
            '<Label value="a"/></RectangleLabels></View>',
            "RectangleLabels",
        ),
        (
            '<View><Image name="i" value="$img"/><Choices name="a" toName="i"><Choice value="x"/>'
            '<Choice value="y"/></Choices><Choices name="b" toName="i"><Choice value="x"/>'
            '<Choice value="y"/></Choices></View>',
            "several",
        ),
        (
            '<View><Image name="i" value="$img"/><Choices name="a" toName="i"><Choice value="x"/>'
            "</Choices></View>",
            "at least 2",
        ),
        # several labels per annotation: a single-label classifier would silently drop them
        (
            '<View><Image name="i" value="$img"/><Choices name="a" toName="i" choice="multiple">'
            '<Choice value="x"/><Choice value="y"/></Choices></View>',
            "choice=.multiple.",
        ),
    ],
)
def test_unsupported_configs_are_refused_with_a_reason(config, reason):
    with pytest.raises(UnsupportedConfig, match=reason):
        task_type_for(config)


def test_single_choice_modes_are_served():
    for mode in ("", ' choice="single"', ' choice="single-radio"', ' choice="Single"'):
        config = (
            f'<View><Image name="i" value="$img"/><Choices name="a" toName="i"{mode}>'
            '<Choice value="x"/><Choice value="y"/></Choices></View>'
        )
        assert task_type_for(config).labels == ("x", "y")


def test_the_schema_hash_changes_with_labels_names_and_order():
    from backend.task_types import schema_change

    schema = task_type_for(DIGITS)
    assert schema.hash == task_type_for(DIGITS + " ").hash
    renamed = task_type_for(DIGITS.replace('alias="two"', 'alias="deux"'))
    reordered = task_type_for(
        DIGITS.replace('<Choice value="0"/><Choice value="1"/>', '<Choice value="1"/><Choice value="0"/>')
    )
    assert len({schema.hash, renamed.hash, reordered.hash}) == 3
    info = {"schema": schema.to_dict(), "schema_hash": schema.hash}
    assert schema_change(info, schema) is None
    assert schema_change(None, schema) is None  # nothing published yet
    assert schema_change({"metrics": {}}, renamed) is None  # published before hashes were stored
    change = schema_change(info, renamed)
    assert change["labels_added"] == ["deux"] and change["labels_removed"] == ["two"]
    assert change["to_hash"] == renamed.hash
    assert schema_change(info, reordered)["labels_added"] == []
