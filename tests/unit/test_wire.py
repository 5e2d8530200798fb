"""Items serialized and parsed in one pass are exactly what botocore's own walk makes of them."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import botocore.loaders
import pytest
from botocore.exceptions import ParamValidationError
from botocore.parsers import JSONParser
from botocore.serialize import JSONSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from skyloom.core import wire

DYNAMODB = boto3.session.Session().client(
    "dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9", aws_access_key_id="x",
    aws_secret_access_key="x")
STREAMS = boto3.session.Session().client(
    "dynamodbstreams", region_name="us-east-1", endpoint_url="http://127.0.0.1:9", aws_access_key_id="x",
    aws_secret_access_key="x")

names = st.text(min_size=1, max_size=8)
numbers = st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str)


def values(binary: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    scalar = st.one_of(
        st.builds(lambda s: {"S": s}, st.text(max_size=20)),
        st.builds(lambda n: {"N": n}, numbers),
        st.builds(lambda b: {"B": b}, binary),
        st.builds(lambda b: {"BOOL": b}, st.booleans()),
        st.just({"NULL": True}),
        st.builds(lambda s: {"SS": s}, st.lists(st.text(max_size=5), min_size=1, max_size=3, unique=True)),
        st.builds(lambda s: {"NS": s}, st.lists(numbers, min_size=1, max_size=3, unique=True)),
        st.builds(lambda s: {"BS": s}, st.lists(binary, min_size=1, max_size=3)),
    )
    return st.recursive(scalar, lambda inner: st.one_of(
        st.builds(lambda m: {"M": m}, st.dictionaries(names, inner, max_size=4)),
        st.builds(lambda items: {"L": items}, st.lists(inner, max_size=4)),
    ), max_leaves=12)


python_values = values(st.binary(max_size=12))
#: On the wire, binary values are base64 text.
wire_values = values(st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()))


def serialized(serializer: JSONSerializer, operation: str, params: dict[str, Any]) -> Any:
    model = DYNAMODB.meta.service_model.operation_model(operation)
    return json.loads(serializer.serialize_to_request(params, model)["body"])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(names, python_values, min_size=1, max_size=6), st.dictionaries(names, python_values, max_size=3))
def test_requests_are_serialized_as_botocore_does(item: dict[str, Any], extra: dict[str, Any]) -> None:
    put = {"TableName": "t", "Item": item, "ConditionExpression": "attribute_not_exists(#k)",
           "ExpressionAttributeNames": {"#k": "k"}}
    transact = {"TransactItems": [
        {"Put": {"TableName": "t", "Item": item}},
        {"Update": {"TableName": "t", "Key": {"k": {"S": "1"}}, "UpdateExpression": "SET #a = :a",
                    "ExpressionAttributeNames": {"#a": "a"},
                    "ExpressionAttributeValues": {f":{i}": v for i, v in enumerate(extra.values())} or None}},
    ]}
    if transact["TransactItems"][1]["Update"]["ExpressionAttributeValues"] is None:
        del transact["TransactItems"][1]["Update"]["ExpressionAttributeValues"]
    for operation, params in (("PutItem", put), ("TransactWriteItems", transact)):
        assert serialized(wire.ItemSerializer(), operation, params) == serialized(JSONSerializer(), operation, params)


def parsed(parser: JSONParser, client: Any, operation: str, body: dict[str, Any]) -> Any:
    model = client.meta.service_model.operation_model(operation)
    return parser.parse({"status_code": 200, "headers": {}, "body": json.dumps(body).encode()}, model.output_shape)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(names, wire_values, min_size=1, max_size=6), max_size=4))
def test_responses_are_parsed_as_botocore_does(items: list[dict[str, Any]]) -> None:
    batch = {"Responses": {"t": items}, "UnprocessedKeys": {}}
    assert (parsed(wire.ItemParser(), DYNAMODB, "BatchGetItem", batch)
            == parsed(JSONParser(), DYNAMODB, "BatchGetItem", batch))
    records = {"Records": [{"eventID": str(i), "eventName": "MODIFY", "dynamodb": {
        "Keys": {"k": {"S": "1"}}, "NewImage": item, "OldImage": item, "SequenceNumber": str(i),
        "SizeBytes": 1, "StreamViewType": "NEW_AND_OLD_IMAGES", "ApproximateCreationDateTime": 1.7e9}}
        for i, item in enumerate(items)], "NextShardIterator": "it"}
    assert (parsed(wire.ItemParser(), STREAMS, "GetRecords", records)
            == parsed(JSONParser(), STREAMS, "GetRecords", records))


@pytest.mark.parametrize("value", [
    {"S": "a", "N": "1"},  # two members: not a union value
    {"X": "a"},  # a member DynamoDB does not have
    {"S": None},
    {"M": {"a": "not a value"}},
    {"L": [{"S": "a"}, 3]},
    {},
])
def test_what_is_not_an_attribute_value_is_left_to_botocore(value: dict[str, Any]) -> None:
    body = {"Item": {"a": value}}

    def outcome(parser: JSONParser) -> Any:
        try:
            return parsed(parser, DYNAMODB, "GetItem", body)
        except Exception as exc:  # botocore's own walk may fail on it: so must ours, alike
            return type(exc)

    assert outcome(wire.ItemParser()) == outcome(JSONParser())
    assert wire.convert(value, bytes) is None


def test_clients_of_this_process_take_items_in_one_pass_and_still_validate() -> None:
    client = boto3.session.Session().client(
        "dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9", aws_access_key_id="x",
        aws_secret_access_key="x")
    wire.install_on(client)
    assert isinstance(client._serializer._serializer, wire.ItemSerializer)
    # botocore still validates first: a bad value is refused before anything is sent
    with pytest.raises(ParamValidationError, match=r"Item\.a\.S"):
        client.put_item(TableName="t", Item={"a": {"S": 3}})
    sqs = boto3.session.Session().client("sqs", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                                         aws_access_key_id="x", aws_secret_access_key="x")
    wire.install_on(sqs)
    assert type(sqs._serializer._serializer) is not wire.ItemSerializer


# ------------------------------------------------------------------ the emulator's request parser
def moto_parsed(parser_cls: Any, operation: str, body: dict[str, Any]) -> Any:
    model = DYNAMODB.meta.service_model.operation_model(operation)
    request = {"method": "POST", "values": {}, "headers": {}, "body": json.dumps(body).encode(),
               "url_path": "/", "url_params": {}}
    return parser_cls(model, map_type=dict).parse(request)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(names, wire_values, min_size=1, max_size=6), st.dictionaries(names, wire_values, max_size=3))
def test_the_emulator_parses_requests_as_moto_does(item: dict[str, Any], extra: dict[str, Any]) -> None:
    from moto.core.parse import JSONParser as MotoJSONParser

    from skyloom.local.moto_requests import ItemRequestParser

    values = {f":{i}": v for i, v in enumerate(extra.values())}
    bodies = {
        "PutItem": {"TableName": "t", "Item": item, "ConditionExpression": "attribute_not_exists(#k)",
                    "ExpressionAttributeNames": {"#k": "k"}, "ReturnValues": "NONE"},
        "TransactWriteItems": {"TransactItems": [
            {"Put": {"TableName": "t", "Item": item}},
            {"Update": {"TableName": "t", "Key": {"k": {"S": "1"}}, "UpdateExpression": "SET #a = :a",
                        "ExpressionAttributeNames": {"#a": "a"}, "ExpressionAttributeValues": values}},
        ]},
        "BatchGetItem": {"RequestItems": {"t": {"Keys": [item], "ConsistentRead": True,
                                                "AttributesToGet": ["a", "b"]}}},
        "Query": {"TableName": "t", "KeyConditionExpression": "#k = :0", "ExpressionAttributeValues": values,
                  "ExclusiveStartKey": item, "Limit": 5},
    }
    for operation, body in bodies.items():
        assert moto_parsed(ItemRequestParser, operation, body) == moto_parsed(MotoJSONParser, operation, body)


def test_a_client_with_an_endpoint_url_resolves_it_without_reading_table_arns() -> None:
    client = boto3.session.Session().client(
        "dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9", aws_access_key_id="x",
        aws_secret_access_key="x")
    wire.install_on(client)
    wire.install_on(client)  # installing twice wraps once
    model = client.meta.service_model.operation_model("TransactWriteItems")
    params = {"TransactItems": [{"Put": {"TableName": "arn:aws:dynamodb:us-west-2:123456789012:table/t",
                                         "Item": {"k": {"S": "v"}}}}]}
    resolver = client._ruleset_resolver
    assert resolver._get_provider_params(model, params, {}).keys().isdisjoint(wire.TABLE_ARN_PARAMETERS)
    assert client._resolve_endpoint_ruleset(model, params, {})[0] == "http://127.0.0.1:9"


def test_an_endpoint_url_is_the_endpoint_whatever_the_table_arns() -> None:
    """The rule :func:`wire._skip_table_arns` relies on: with an endpoint URL set, DynamoDB's rule set
    returns it (or refuses FIPS and dual-stack) before any rule reads the ARN parameters."""
    rules = botocore.loaders.Loader().load_service_model("dynamodb", "endpoint-rule-set-1")["rules"]
    first = rules[0]
    assert {"fn": "isSet", "argv": [{"ref": "Endpoint"}]} in first["conditions"]
    assert first["rules"][-1]["endpoint"]["url"] == "{Endpoint}"
    assert not any(name in json.dumps(first) for name in wire.TABLE_ARN_PARAMETERS)


def test_a_client_on_aws_still_reads_table_arns() -> None:
    client = boto3.session.Session().client("dynamodb", region_name="us-east-1", aws_access_key_id="x",
                                            aws_secret_access_key="x")
    wire.install_on(client)
    model = client.meta.service_model.operation_model("TransactWriteItems")
    params = {"TransactItems": [{"Put": {"TableName": "t", "Item": {"k": {"S": "v"}}}}]}
    assert "ResourceArnList" in client._ruleset_resolver._get_provider_params(model, params, {})
