// render_svg: the simulated timeline as a picture in the style of DualPipe's README figure.
#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "plan/pipeline_sim.h"

namespace ff::plan {

namespace {

constexpr double kLabelWidth = 80;
constexpr double kRowHeight = 26;
constexpr double kTop = 30;
constexpr double kMinPlotWidth = 600;
constexpr double kPixelsPerUnitHint = 14;  // one F of unit length is this wide, when it fits
constexpr double kMaxPlotWidth = 2400;
// A picture past this many blocks is unreadable and tens of megabytes long.
constexpr size_t kMaxBlocks = 50000;

constexpr const char* kForward = "#f4b13f";
constexpr const char* kBackward = "#5fc34f";
constexpr const char* kBackwardInput = "#a6e39a";
constexpr const char* kWeight = "#77bdf0";

// The number the figure prints on a block: the chunk's index within its direction.
int label(const Schedule& s, const ChunkRef& c) {
  return s.num_dirs == 2 && c.dir == 1 ? c.chunk - s.num_chunks / 2 : c.chunk;
}

void block(std::string& svg, const char* cls, double x, double y, double w, double h,
           const char* fill, int number, bool border) {
  svg += fmt::format(
      "<rect class=\"{}\" x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" height=\"{:.2f}\" "
      "fill=\"{}\" stroke=\"{}\" stroke-width=\"{}\"/>\n",
      cls, x, y, w, h, fill, border ? "#000" : "#555", border ? 1.5 : 0.5);
  if (number >= 0 && w >= 9) {
    svg += fmt::format(
        "<text x=\"{:.2f}\" y=\"{:.2f}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n",
        x + w / 2, y + h / 2 + 4, number);
  }
}

}  // namespace

std::string render_svg(const Schedule& s, const SimResult& r, const OpDurations& d) {
  size_t blocks = 0;
  for (const auto& row : r.timeline) blocks += row.size();
  FF_CHECK(blocks <= kMaxBlocks,
           "the timeline has {} blocks, more than an SVG picture draws ({}); use fewer chunks or "
           "stages",
           blocks, kMaxBlocks);
  const double unit = std::max(d.f, 1e-12);
  const double span = std::max(r.step_time, 1e-12);
  const double plot_width =
      std::clamp(span / unit * kPixelsPerUnitHint, kMinPlotWidth, kMaxPlotWidth);
  const double scale = plot_width / span;
  const double width = kLabelWidth + plot_width + 20;
  const double legend_y = kTop + s.num_ranks * kRowHeight + 14;
  const double height = legend_y + 40;

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" "
      "viewBox=\"0 0 {:.0f} {:.0f}\" font-family=\"sans-serif\">\n",
      width, height, width, height);
  svg += fmt::format(
      "<text x=\"{:.0f}\" y=\"18\" font-size=\"13\">{} pp={} ranks={} chunks={}: step {:g}, "
      "max bubble {:g} (F={:g} B={:g} W={:g} F&amp;B={:g})</text>\n",
      kLabelWidth, method_name(s.method), s.pp, s.num_ranks, s.num_chunks, r.step_time,
      r.max_bubble(), d.f, d.b, d.w, d.fb);
  for (int rank = 0; rank < s.num_ranks; ++rank) {
    const double y = kTop + rank * kRowHeight;
    svg += fmt::format("<g class=\"rank\" data-rank=\"{}\">\n", rank);
    svg += fmt::format(
        "<text x=\"4\" y=\"{:.2f}\" font-size=\"12\" font-weight=\"bold\">Device {}</text>\n",
        y + kRowHeight / 2 + 4, rank);
    svg += fmt::format(
        "<rect class=\"lane\" x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" height=\"{:.2f}\" "
        "fill=\"#fff\" stroke=\"#ccc\" stroke-width=\"0.5\"/>\n",
        kLabelWidth, y, plot_width, kRowHeight - 2);
    for (const TimedOp& t : r.timeline[rank]) {
      const Op& op = s.ops[rank][t.op];
      const double x = kLabelWidth + t.start * scale;
      const double w = (t.end - t.start) * scale;
      const double h = kRowHeight - 2;
      switch (op.kind) {
        case OpKind::Forward:
          block(svg, "op F", x, y, w, h, kForward, label(s, op.a), false);
          break;
        case OpKind::Backward:
          block(svg, op.zb ? "op Bi" : "op B", x, y, w, h, op.zb ? kBackwardInput : kBackward,
                label(s, op.a), false);
          break;
        case OpKind::Weight:
          block(svg, "op W", x, y, w, h, kWeight, label(s, op.a), false);
          break;
        case OpKind::ForwardBackward: {
          // The forward's share of the pair's width follows F : B.
          const double fw = d.f + d.b > 0 ? w * d.f / (d.f + d.b) : w / 2;
          svg += "<g class=\"op FB\">\n";
          block(svg, "half F", x, y, fw, h, kForward, label(s, op.a), false);
          block(svg, "half B", x + fw, y, w - fw, h, kBackward, label(s, op.b), false);
          svg += fmt::format(
              "<rect x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" height=\"{:.2f}\" fill=\"none\" "
              "stroke=\"#000\" stroke-width=\"1.5\"/>\n</g>\n",
              x, y, w, h);
          break;
        }
        default:
          break;
      }
    }
    svg += "</g>\n";
  }
  const std::pair<const char*, const char*> legend[] = {
      {kForward, "Forward"},
      {kBackward, "Backward"},
      {kBackwardInput, "Backward for input"},
      {kWeight, "Backward for weights"},
      {nullptr, "Overlapped forward &amp; backward"}};
  double x = kLabelWidth;
  svg += "<g class=\"legend\">\n";
  for (const auto& [colour, text] : legend) {
    if (colour) {
      svg += fmt::format(
          "<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"16\" height=\"14\" fill=\"{}\" stroke=\"#555\" "
          "stroke-width=\"0.5\"/>\n",
          x, legend_y, colour);
    } else {
      svg += fmt::format(
          "<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"8\" height=\"14\" fill=\"{}\"/>"
          "<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"8\" height=\"14\" fill=\"{}\"/>"
          "<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"16\" height=\"14\" fill=\"none\" "
          "stroke=\"#000\" stroke-width=\"1.5\"/>\n",
          x, legend_y, kForward, x + 8, legend_y, kBackward, x, legend_y);
    }
    svg += fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\" font-size=\"12\">{}</text>\n", x + 22,
                       legend_y + 12, text);
    x += 40 + 7.0 * static_cast<double>(std::char_traits<char>::length(text));
  }
  svg += "</g>\n</svg>\n";
  return svg;
}

}  // namespace ff::plan
