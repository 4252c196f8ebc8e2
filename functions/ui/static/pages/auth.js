// Sign in and sign up. After either, the user goes back to the page they came from (?next=).
import { signIn, signUp } from "../api.js";
import { h, field } from "../dom.js";
import { announce } from "../messages.js";

function destination(query) {
  const next = query.next ?? "";
  // Only in-app routes: never an absolute URL someone slipped into the link.
  return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/signin") && !next.startsWith("/signup") ? next : "/containers";
}

function credentialsForm({ submitLabel, passwordHint, autocomplete, onSubmit, errors }) {
  const email = h("input", { type: "email", name: "email", required: true, autocomplete: "email", inputmode: "email" });
  const password = h("input", { type: "password", name: "password", required: true, autocomplete });
  const submit = h("button", { type: "submit", class: "primary" }, submitLabel);
  const form = h(
    "form",
    { class: "card narrow", novalidate: false },
    field("Email", email),
    field("Password", password, passwordHint),
    errors.node,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    submit.disabled = true;
    try {
      await onSubmit(email.value.trim(), password.value);
    } catch (error) {
      errors.show(error);
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export function signInPage(ctx) {
  ctx.heading("Sign in to Berth");
  const errors = ctx.errorBox();
  const next = destination(ctx.query);
  ctx.main.append(
    credentialsForm({
      submitLabel: "Sign in",
      autocomplete: "current-password",
      errors,
      onSubmit: async (email, password) => {
        const user = await signIn(email, password);
        announce(`Signed in as ${user?.email ?? email}.`);
        ctx.navigate(next);
      },
    }),
    h("p", {}, "New to Berth? ", h("a", { href: ctx.query.next ? `#/signup?next=${encodeURIComponent(ctx.query.next)}` : "#/signup" }, "Create an account")),
  );
}

export function signUpPage(ctx) {
  ctx.heading("Create your Berth account");
  const errors = ctx.errorBox();
  const next = destination(ctx.query);
  ctx.main.append(
    credentialsForm({
      submitLabel: "Create account",
      autocomplete: "new-password",
      passwordHint: "Use a passphrase of a few words (10 characters or more); Berth says so if it is too easy to guess.",
      errors,
      onSubmit: async (email, password) => {
        const user = await signUp(email, password);
        announce(`Welcome to Berth, ${user?.email ?? email}.`);
        ctx.navigate(next === "/containers" ? "/images" : next);
      },
    }),
    h("p", {}, "Already have an account? ", h("a", { href: "#/signin" }, "Sign in")),
  );
}
