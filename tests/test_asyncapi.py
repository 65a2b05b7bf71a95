"""The AsyncAPI 3.0 document: a whole-dict snapshot, and structural checks on a larger table."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from flows.asyncapi_flows import CreditEntity, Ref
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from bridge.actions import Signal, SignalWithStart
from bridge.cli.asyncapi import asyncapi_document, channel_id, glob_pattern
from bridge.routing import Match, Route, Router
from bridge.settings import LoomSettings


class Placed(BaseModel):
    order_id: str = Field(min_length=1)


class Address(BaseModel):
    city: str


class Shipped(BaseModel):
    order_id: str
    ship_to: Address


def settings(topics: list[str]) -> LoomSettings:
    return LoomSettings.model_validate({
        "kafka": {"topics": topics},
        "emit": {"default_topic": "loom.events", "topic_map": {"order.*": "orders.out"}},
    })


CE_BASE: dict[str, Any] = {
    "ce_specversion": {"type": "string", "const": "1.0"},
    "ce_id": {"type": "string", "description": "Unique per source; (source, id) deduplicates"},
    "ce_source": {"type": "string", "description": "Context in which the event happened"},
    "ce_subject": {"type": "string"},
    "ce_time": {"type": "string", "format": "date-time"},
    "ce_partitionkey": {"type": "string", "description": "Kafka key; orders per workflow"},
    "ce_traceparent": {"type": "string", "description": "W3C trace context"},
    "content-type": {"type": "string", "description": "datacontenttype of the value"},
}
KAFKA_BINDING = {
    "kafka": {
        "key": {"type": "string", "description": "The partitionkey extension"},
        "bindingVersion": "0.5.0",
    }
}
REQUIRED = ["ce_specversion", "ce_id", "ce_source", "ce_type"]


def test_snapshot_of_one_consumed_and_one_emitted_event() -> None:
    router = Router([
        Route("placed", Match(type="order.placed"),
              SignalWithStart(workflow="Saga", task_queue="q", workflow_id="order-{data.order_id}"),
              data=Placed),
    ])
    doc = asyncapi_document(router, settings(["orders"]), emits={"order.shipped": Shipped},
                            title="shop", version="2.1.0")
    assert doc == {
        "asyncapi": "3.0.0",
        "info": {
            "title": "shop",
            "version": "2.1.0",
            "description": doc["info"]["description"],
        },
        "defaultContentType": "application/json",
        "channels": {
            "order_placed": {
                "address": "orders",
                "description": "Consumed by the loom from orders",
                "messages": {"placed": {"$ref": "#/components/messages/placed"}},
            },
            "emit_order_shipped": {
                "address": "orders.out",
                "description": "order.shipped events emitted by workflows",
                "messages": {
                    "emit_order_shipped": {"$ref": "#/components/messages/emit_order_shipped"}
                },
            },
        },
        "operations": {
            "consume_placed": {
                "action": "receive",
                "channel": {"$ref": "#/channels/order_placed"},
                "summary": "Route placed: signal-with-start Saga id order-{data.order_id} "
                "on task queue q",
                "messages": [{"$ref": "#/channels/order_placed/messages/placed"}],
            },
            "send_emit_order_shipped": {
                "action": "send",
                "channel": {"$ref": "#/channels/emit_order_shipped"},
                "summary": "Workflows emit order.shipped",
                "messages": [
                    {"$ref": "#/channels/emit_order_shipped/messages/emit_order_shipped"}
                ],
            },
        },
        "components": {
            "messages": {
                "placed": {
                    "name": "order.placed",
                    "title": "placed",
                    "summary": "Route placed: signal-with-start Saga id order-{data.order_id} "
                    "on task queue q",
                    "contentType": "application/json",
                    "headers": {
                        "type": "object",
                        "properties": {
                            **CE_BASE, "ce_type": {"type": "string", "const": "order.placed"}
                        },
                        "required": REQUIRED,
                    },
                    "payload": {"$ref": "#/components/schemas/Placed"},
                    "bindings": KAFKA_BINDING,
                },
                "emit_order_shipped": {
                    "name": "order.shipped",
                    "title": "order.shipped",
                    "summary": "Emitted by workflows with emit() to orders.out",
                    "contentType": "application/json",
                    "headers": {
                        "type": "object",
                        "properties": {
                            **CE_BASE, "ce_type": {"type": "string", "const": "order.shipped"}
                        },
                        "required": REQUIRED,
                    },
                    "payload": {"$ref": "#/components/schemas/Shipped"},
                    "bindings": KAFKA_BINDING,
                },
            },
            "schemas": {
                "Placed": {
                    "properties": {
                        "order_id": {"minLength": 1, "title": "Order Id", "type": "string"}
                    },
                    "required": ["order_id"],
                    "title": "Placed",
                    "type": "object",
                },
                "Address": {
                    "properties": {"city": {"title": "City", "type": "string"}},
                    "required": ["city"],
                    "title": "Address",
                    "type": "object",
                },
                "Shipped": {
                    "properties": {
                        "order_id": {"title": "Order Id", "type": "string"},
                        "ship_to": {"$ref": "#/components/schemas/Address"},
                    },
                    "required": ["order_id", "ship_to"],
                    "title": "Shipped",
                    "type": "object",
                },
            },
        },
    }


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/")
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_prefix_glob_extensions_and_fan_out_share_channels_and_every_ref_resolves() -> None:
    router = Router([
        Route("placed", Match(type="order.placed", source="shop/*"),
              SignalWithStart(workflow="Saga", task_queue="q", workflow_id="order-{data.order_id}"),
              data=Placed),
        Route("placed-audit", Match(type="order.placed"),
              SignalWithStart(workflow="Audit", task_queue="q", workflow_id="{source}/{id}")),
        Route("replies", Match(type_prefix="payment.", extensions={"tenant": "acme"}),
              Signal(workflow_id="order-{data.order_id}"), data=Ref),
        Route("raw", Match(type_glob="audit.*.v[12]"),
              SignalWithStart(workflow="Audit", task_queue="q", workflow_id="{subject}")),
    ])
    doc = asyncapi_document(router, settings(["a", "b"]), emits={"note": None})
    assert set(doc["channels"]) == {"order_placed", "payment_star", "audit_star_v_12", "emit_note"}
    assert set(doc["channels"]["order_placed"]["messages"]) == {"placed", "placed-audit"}
    assert doc["channels"]["order_placed"]["address"] is None  # two topics: no single address
    assert doc["channels"]["emit_note"]["address"] == "loom.events"
    messages = doc["components"]["messages"]
    placed = messages["placed"]["headers"]["properties"]
    assert placed["ce_source"]["description"] == "Source matching the glob 'shop/*'"
    replies = messages["replies"]["headers"]
    assert replies["properties"]["ce_type"] == {"type": "string", "pattern": "^payment\\."}
    assert replies["properties"]["ce_tenant"]["const"] == "acme"
    assert "ce_tenant" in replies["required"]
    assert messages["replies"]["name"] == "payment.*"
    assert messages["raw"]["headers"]["properties"]["ce_type"]["pattern"] == "^audit\\..*\\.v[12]$"
    assert messages["raw"]["payload"] == {} and messages["emit_note"]["payload"] == {}
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, ref
    key = re.compile(r"^[A-Za-z0-9_\-]+$")
    for section in (doc["channels"], doc["operations"], messages, doc["components"]["schemas"]):
        assert all(key.match(name) for name in section), list(section)
    for name, op in doc["operations"].items():
        for msg_ref in op["messages"]:  # operation messages point into their own channel
            assert msg_ref["$ref"].startswith(op["channel"]["$ref"] + "/messages/"), name


def test_routes_bound_to_topics_get_a_channel_per_topic_addressed_to_it() -> None:
    def action() -> SignalWithStart:
        return SignalWithStart(workflow="Saga", task_queue="q", workflow_id="{subject}")

    router = Router([
        Route("placed", Match(type="order.placed", topic="orders"), action()),
        Route("cancelled", Match(type="order.cancelled", topic=["orders", "returns"]), action()),
        Route("paid", Match(type="payment.charged", topic="pay.*"), action()),
        Route("lost", Match(type="ship.sent", topic="ship.*"), action()),
        Route("any", Match(type="audit.logged"), action()),
    ])
    doc = asyncapi_document(router, settings(["orders", "returns", "pay.eu", "pay.us"]))

    def ref(chan: str, msg: str) -> dict[str, Any]:
        return {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{chan}"},
            "summary": doc["components"]["messages"][msg]["summary"],
            "messages": [{"$ref": f"#/channels/{chan}/messages/{msg}"}],
        }

    assert {k: (c["address"], c["description"], list(c["messages"]))
            for k, c in doc["channels"].items()} == {
        "order_placed__orders": ("orders", "Consumed by the loom from orders", ["placed"]),
        "order_cancelled__orders": ("orders", "Consumed by the loom from orders", ["cancelled"]),
        "order_cancelled__returns": ("returns", "Consumed by the loom from returns", ["cancelled"]),
        # A topic glob: one channel per consumed topic it names.
        "payment_charged__pay_eu": ("pay.eu", "Consumed by the loom from pay.eu", ["paid"]),
        "payment_charged__pay_us": ("pay.us", "Consumed by the loom from pay.us", ["paid"]),
        "ship_sent__ship_star": (
            None, "Consumed by the loom from topics matching 'ship.*' (none of them consumed)",
            ["lost"],
        ),
        # Unbound, with several consumed topics: no single address, as before.
        "audit_logged": (None, "Consumed by the loom from orders, returns, pay.eu, pay.us", ["any"]),
    }
    assert doc["operations"] == {
        "consume_placed": ref("order_placed__orders", "placed"),
        "consume_cancelled__order_cancelled__orders": ref("order_cancelled__orders", "cancelled"),
        "consume_cancelled__order_cancelled__returns": ref("order_cancelled__returns", "cancelled"),
        "consume_paid__payment_charged__pay_eu": ref("payment_charged__pay_eu", "paid"),
        "consume_paid__payment_charged__pay_us": ref("payment_charged__pay_us", "paid"),
        "consume_lost": ref("ship_sent__ship_star", "lost"),
        "consume_any": ref("audit_logged", "any"),
    }
    for r in _refs(doc):
        assert _resolve(doc, r) is not None, r


def test_a_route_to_an_entity_lists_the_types_its_handlers_take() -> None:
    router = Router([
        Route("credit", Match(type_prefix="payment."),
              SignalWithStart(workflow=CreditEntity, task_queue="q", workflow_id="c-{data.order_id}"),
              data=Ref),
        # By run method, one exact type: the handler the entity picks for it (here a glob's).
        Route("declined", Match(type="payment.declined"),
              SignalWithStart(workflow=CreditEntity.run, task_queue="q", workflow_id="c-{data.order_id}"),
              data=Ref),
    ])
    doc = asyncapi_document(router, settings(["payments"]))
    messages = doc["components"]["messages"]
    assert doc["operations"]["consume_credit"]["messages"] == [
        {"$ref": "#/channels/payment_star/messages/credit__payment_charged"},
        {"$ref": "#/channels/payment_star/messages/credit__payment_star"},
    ]
    charged = messages["credit__payment_charged"]
    assert charged["name"] == "payment.charged"
    assert charged["payload"] == {"$ref": "#/components/schemas/Charged"}
    assert charged["headers"]["properties"]["ce_type"] == {"type": "string", "const": "payment.charged"}
    assert charged["summary"].endswith("handled by CreditEntity.charged")
    glob = messages["credit__payment_star"]
    assert glob["headers"]["properties"]["ce_type"] == {"type": "string", "pattern": "^payment\\..*$"}
    assert glob["payload"] == {"$ref": "#/components/schemas/Ref"}  # the handler takes the Event
    assert doc["operations"]["consume_declined"]["messages"] == [
        {"$ref": "#/channels/payment_declined/messages/declined__payment_declined"},
    ]
    assert messages["declined__payment_declined"]["summary"].endswith("by CreditEntity.other_payment")
    assert "shipment.shipped" not in {m["name"] for m in messages.values()}
    assert set(doc["components"]["schemas"]) == {"Charged", "Ref"}
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, ref


def test_channel_ids() -> None:
    assert channel_id(Match(type="order.placed")) == "order_placed"
    assert channel_id(Match(type_prefix="order.")) == "order_star"
    assert channel_id(Match(type_glob="*.failed")) == "star_failed"
    assert channel_id(Match(source="x")) == "all"


def test_glob_pattern_escapes_only_regex_syntax() -> None:
    assert glob_pattern("order-placed.v1") == "^order-placed\\.v1$"
    assert glob_pattern("a+b(c)") == "^a\\+b\\(c\\)$"


@given(
    glob=st.text(alphabet="ab.*?[]!", max_size=8),
    text=st.text(alphabet="ab.[]!", max_size=8),
)
def test_glob_pattern_agrees_with_fnmatch(glob: str, text: str) -> None:
    assert bool(re.match(glob_pattern(glob), text, re.DOTALL)) == fnmatch.fnmatchcase(text, glob)
