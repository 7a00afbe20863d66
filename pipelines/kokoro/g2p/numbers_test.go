package g2p

import "testing"

// The number words num2words 0.5.6 writes (as misaki calls it).
func TestNumberWords(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"0", "zero"},
		{"7", "seven"},
		{"13", "thirteen"},
		{"20", "twenty"},
		{"21", "twenty-one"},
		{"99", "ninety-nine"},
		{"100", "one hundred"},
		{"101", "one hundred and one"},
		{"110", "one hundred and ten"},
		{"999", "nine hundred and ninety-nine"},
		{"1000", "one thousand"},
		{"1001", "one thousand and one"},
		{"1100", "one thousand, one hundred"},
		{"1234", "one thousand, two hundred and thirty-four"},
		{"10000", "ten thousand"},
		{"100000", "one hundred thousand"},
		{"1000000", "one million"},
		{"1000001", "one million and one"},
		{"2500000", "two million, five hundred thousand"},
		{"7900000000", "seven billion, nine hundred million"},
		{"1000000000005", "one trillion and five"},
		{"1000000000000000", "one quadrillion"},
		{"3000000000000000000", "three quintillion"},
	} {
		if got := cardinalString(c.in); got != c.want {
			t.Errorf("cardinal %s: %q, want %q", c.in, got, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"1", "first"},
		{"2", "second"},
		{"3", "third"},
		{"4", "fourth"},
		{"5", "fifth"},
		{"8", "eighth"},
		{"9", "ninth"},
		{"11", "eleventh"},
		{"12", "twelfth"},
		{"20", "twentieth"},
		{"21", "twenty-first"},
		{"22", "twenty-second"},
		{"40", "fortieth"},
		{"100", "one hundredth"},
		{"101", "one hundred and first"},
		{"112", "one hundred and twelfth"},
		{"1000", "one thousandth"},
		{"1000000", "one millionth"},
	} {
		if got := ordinalString(c.in); got != c.want {
			t.Errorf("ordinal %s: %q, want %q", c.in, got, c.want)
		}
	}
	for _, c := range []struct {
		in   int
		want string
	}{
		{42, "forty-two"},
		{999, "nine hundred and ninety-nine"},
		{1000, "one thousand"},
		{1066, "one thousand and sixty-six"},
		{1100, "eleven hundred"},
		{1800, "eighteen hundred"},
		{1905, "nineteen hundred and five"},
		{1999, "nineteen hundred and ninety-nine"},
		{2000, "two thousand"},
		{2005, "two thousand and five"},
		{2010, "two thousand and ten"},
		{2024, "two thousand and twenty-four"},
		{2100, "twenty-one hundred"},
		{9999, "ninety-nine hundred and ninety-nine"},
	} {
		if got := yearString(c.in); got != c.want {
			t.Errorf("year %d: %q, want %q", c.in, got, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"3.14159", "three point one four one five nine"},
		{"0.5", "zero point five"},
		{"1.50", "one point five"},
		{"2.0", "two"},
		{"15.99", "fifteen point nine nine"},
		{"100.25", "one hundred point two five"},
		{"1.01", "one point zero one"},
		{"007.5", "seven point five"},
		{"12345.678", "twelve thousand, three hundred and forty-five point six seven eight"},
	} {
		if got := floatString(c.in); got != c.want {
			t.Errorf("float %s: %q, want %q", c.in, got, c.want)
		}
	}
}
