"""Tool-call parsing: well-formed calls come back as ToolCalls, everything else as errors, and
parse_action never raises."""

import random

from absl.testing import parameterized

from rlvr_jax.envs import actions

CALL = actions.format_tool_call


class ParseActionTest(parameterized.TestCase):
    def test_plain_text_is_the_message(self):
        self.assertEqual(actions.parse_action("  Hello there.\n"), actions.Action("Hello there."))

    def test_one_call_round_trips(self):
        text = CALL("search", {"query": "red shoes", "k": 3, "filters": {"size": [41, 42]}})
        self.assertEqual(
            actions.parse_action(text),
            actions.Action(
                "",
                (
                    actions.ToolCall(
                        "search", {"query": "red shoes", "k": 3, "filters": {"size": [41, 42]}}
                    ),
                ),
            ),
        )

    def test_several_calls_and_text_outside_them(self):
        text = (
            "Let me look.\n"
            + CALL("search", {"q": "a"})
            + "\n<tool_call>\n"
            + '{"name": "cart", "arguments": {"item": 7}}'
            + "\n</tool_call>\nDone."
        )
        action = actions.parse_action(text)
        self.assertEqual(
            action.tool_calls,
            (actions.ToolCall("search", {"q": "a"}), actions.ToolCall("cart", {"item": 7})),
        )
        self.assertEqual(action.message, "Let me look.\n\n\nDone.")
        self.assertEqual(action.errors, ())

    def test_missing_arguments_are_empty(self):
        action = actions.parse_action('<tool_call>{"name": "view_cart"}</tool_call>')
        self.assertEqual(action.tool_calls, (actions.ToolCall("view_cart", {}),))

    def test_arguments_as_a_json_string(self):
        body = '{"name": "f", "arguments": "{\\"x\\": 1}"}'
        action = actions.parse_action(f"<tool_call>{body}</tool_call>")
        self.assertEqual(action.tool_calls, (actions.ToolCall("f", {"x": 1}),))
        self.assertEqual(action.errors, ())

    @parameterized.named_parameters(
        ("malformed_json", '{"name": "f", "arguments": {', "tool call 0: malformed JSON"),
        ("trailing_comma", '{"name": "f",}', "tool call 0: malformed JSON"),
        ("empty", "", "tool call 0: malformed JSON"),
        ("too_deep", "[" * 5000, "tool call 0: malformed JSON (nested too deeply)"),
        ("missing_name", '{"arguments": {}}', 'tool call 0: expected {"name": str'),
        ("name_not_str", '{"name": 3, "arguments": {}}', 'tool call 0: expected {"name": str'),
        ("not_an_object", '["f", {}]', 'tool call 0: expected {"name": str'),
        ("list_arguments", '{"name": "f", "arguments": [1]}', "tool call 0 (f): arguments must"),
        ("null_arguments", '{"name": "f", "arguments": null}', "tool call 0 (f): arguments must"),
        ("string_not_json", '{"name": "f", "arguments": "x=1"}', "tool call 0 (f): arguments must"),
        ("string_of_list", '{"name": "f", "arguments": "[1]"}', "tool call 0 (f): arguments must"),
        (
            "string_too_deep",
            '{"name": "f", "arguments": "' + "[" * 5000 + '"}',
            "tool call 0 (f): arguments",
        ),
    )
    def test_malformed_call_is_an_error(self, body, error):
        action = actions.parse_action(f"ok <tool_call>{body}</tool_call>" + CALL("g", {}))
        self.assertLen(action.errors, 1)
        self.assertStartsWith(action.errors[0], error)
        self.assertEqual(action.tool_calls, (actions.ToolCall("g", {}),))  # the good call stays
        self.assertEqual(action.message, "ok")

    def test_error_names_the_call_index(self):
        action = actions.parse_action(CALL("a", {}) + "<tool_call>{</tool_call>")
        self.assertStartsWith(action.errors[0], "tool call 1: malformed JSON")

    @parameterized.named_parameters(
        ("unclosed", 'Hi <tool_call>{"name": "f"}', 'Hi {"name": "f"}', 0),
        ("stray_close", "Hi </tool_call>", "Hi", 0),
        ("unclosed_after_call", CALL("f", {}) + " <tool_call>", "", 1),
        ("close_before_open", "</tool_call>x<tool_call>", "x", 0),
    )
    def test_unbalanced_tags(self, text, message, calls):
        action = actions.parse_action(text)
        self.assertEqual(action.errors, ("unbalanced <tool_call> tags",))
        self.assertEqual(action.message, message)
        self.assertLen(action.tool_calls, calls)

    def test_never_raises_on_random_text(self):
        rng = random.Random(0)
        alphabet = ["<tool_call>", "</tool_call>", "{", "}", "[", '"', ":", ",", "name", "x", " "]
        for _ in range(500):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
            action = actions.parse_action(text)
            self.assertIsInstance(action, actions.Action)
