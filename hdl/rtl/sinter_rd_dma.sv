// The 2-D strided read DMA (DRAM -> on-chip buffer) of the Load instruction.
//
// Walks the padded block row-major; position (py, px) is buffer row sram_base + py*w + px, so
// the on-chip row simply counts up. A data position requests its element (`beats_i` whole beats
// from the beat-aligned address) and records (row, byte offset in the beat) in a tag queue; a
// padding position writes the pad row directly, in a cycle in which no response beat needs the
// buffer's write port. Responses return in order and are written as they arrive, so the tag
// queue depth bounds the elements in flight and nothing ever has to stall a response.
//
// The beats in flight are also capped (MAX_BEATS): responses come back in request order over a
// port the instruction fetch shares, so every beat queued ahead of a fetch delays it. The cap
// is enough to stream at one beat per cycle over the memory latency, and no more.
module sinter_rd_dma #(
  parameter int unsigned BUS_BYTES = 32,
  parameter int unsigned TAG_DEPTH = 32,
  parameter int unsigned MAX_BEATS = sinter_isa_pkg::DMA_MAX_BEATS,
  parameter int unsigned BW        = 8,    // width of the beats-per-element count
  parameter int unsigned LB        = $clog2(BUS_BYTES)
) (
  input  logic                   clk_i,
  input  logic                   rst_ni,
  input  logic                   abort_i,
  // transfer, sampled on start_i
  input  logic                   start_i,
  input  logic [31:0]            dram_base_i,
  input  logic [15:0]            sram_base_i,
  input  logic [15:0]            y_size_i,
  input  logic [15:0]            x_size_i,
  input  logic [31:0]            y_stride_i,
  input  logic [31:0]            x_stride_i,
  input  logic [7:0]             pad_top_i,
  input  logic [7:0]             pad_bottom_i,
  input  logic [7:0]             pad_left_i,
  input  logic [7:0]             pad_right_i,
  input  logic [BW-1:0]          beats_i,
  output logic                   busy_o,
  output logic                   done_o,      // pulse: every row of the transfer is written
  // memory read requester
  output logic                   req_valid_o,
  input  logic                   req_ready_i,
  output logic [31:0]            req_addr_o,
  output logic [15:0]            req_len_o,
  input  logic                   resp_valid_i,
  input  logic [BUS_BYTES*8-1:0] resp_data_i,
  // buffer writes: a response beat (beat `wr_beat_o` of the element at byte `wr_off_o` of the
  // beat) or a whole pad row
  output logic                   wr_valid_o,
  output logic [15:0]            wr_row_o,
  output logic [BW-1:0]          wr_beat_o,
  output logic [LB-1:0]          wr_off_o,
  output logic [BUS_BYTES*8-1:0] wr_data_o,
  output logic                   wr_pad_o
);
  localparam int unsigned TW = 16 + LB;

  logic          active_q, gen_q;
  logic [16:0]   py_q, px_q, h_last_q, w_last_q;
  logic [16:0]   pt_q, y_end_q, pl_q, x_end_q;
  logic [15:0]   row_q;
  logic [31:0]   row_addr_q, cur_addr_q, ys_q, xs_q;
  logic [BW-1:0] beats_q, bcnt_q;

  logic          data_row, in_data, advance, row_wrap, pad_fire, req_fire;
  logic          tag_full, tag_empty, tag_pop;
  logic [TW-1:0] tag_head;

  assign data_row = (py_q >= pt_q) && (py_q < y_end_q);
  assign in_data  = data_row && (px_q >= pl_q) && (px_q < x_end_q);
  assign row_wrap = (px_q == w_last_q);

  // Beats requested and not yet answered.
  logic [15:0] beats_out_q;
  logic        beats_room;
  assign beats_room  = (beats_out_q + 16'(beats_q) <= 16'(MAX_BEATS)) || (beats_out_q == '0);
  assign req_valid_o = gen_q && in_data && !tag_full && beats_room;
  assign req_addr_o  = {cur_addr_q[31:LB], {LB{1'b0}}};
  assign req_len_o   = 16'(beats_q);
  assign req_fire    = req_valid_o && req_ready_i;
  assign pad_fire    = gen_q && !in_data && !resp_valid_i;
  assign advance     = req_fire || pad_fire;

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      active_q   <= 1'b0;
      gen_q      <= 1'b0;
      py_q       <= '0;
      px_q       <= '0;
      h_last_q   <= '0;
      w_last_q   <= '0;
      pt_q       <= '0;
      y_end_q    <= '0;
      pl_q       <= '0;
      x_end_q    <= '0;
      row_q      <= '0;
      row_addr_q <= '0;
      cur_addr_q <= '0;
      ys_q       <= '0;
      xs_q       <= '0;
      beats_q    <= '0;
    end else if (start_i) begin
      active_q   <= 1'b1;
      gen_q      <= 1'b1;
      py_q       <= '0;
      px_q       <= '0;
      h_last_q   <= 17'(pad_top_i) + 17'(y_size_i) + 17'(pad_bottom_i) - 17'd1;
      w_last_q   <= 17'(pad_left_i) + 17'(x_size_i) + 17'(pad_right_i) - 17'd1;
      pt_q       <= 17'(pad_top_i);
      y_end_q    <= 17'(pad_top_i) + 17'(y_size_i);
      pl_q       <= 17'(pad_left_i);
      x_end_q    <= 17'(pad_left_i) + 17'(x_size_i);
      row_q      <= sram_base_i;
      row_addr_q <= dram_base_i;
      cur_addr_q <= dram_base_i;
      ys_q       <= y_stride_i;
      xs_q       <= x_stride_i;
      beats_q    <= beats_i;
    end else begin
      if (advance) begin
        row_q <= row_q + 16'd1;
        if (row_wrap) begin
          px_q <= '0;
          py_q <= py_q + 17'd1;
          if (data_row) begin
            row_addr_q <= row_addr_q + ys_q;
            cur_addr_q <= row_addr_q + ys_q;
          end else begin
            cur_addr_q <= row_addr_q;
          end
          if (py_q == h_last_q) gen_q <= 1'b0;
        end else begin
          px_q <= px_q + 17'd1;
          if (in_data) cur_addr_q <= cur_addr_q + xs_q;
        end
      end
      if (done_o) active_q <= 1'b0;
    end
  end

  // ---- responses --------------------------------------------------------------------------------
  logic [$clog2(TAG_DEPTH+1)-1:0] unused_tag_count;
  sinter_queue #(.WIDTH(TW), .DEPTH(TAG_DEPTH)) u_tags (
    .clk_i,
    .rst_ni,
    .flush_i (abort_i),
    .push_i  (req_fire),
    .wdata_i ({row_q, cur_addr_q[LB-1:0]}),
    .pop_i   (tag_pop),
    .rdata_o (tag_head),
    .empty_o (tag_empty),
    .full_o  (tag_full),
    .count_o (unused_tag_count)
  );

  assign tag_pop = resp_valid_i && (bcnt_q == beats_q - BW'(1));

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      beats_out_q <= '0;
    end else begin
      beats_out_q <= beats_out_q + (req_fire ? 16'(beats_q) : 16'd0) - {15'd0, resp_valid_i};
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i || start_i) begin
      bcnt_q <= '0;
    end else if (resp_valid_i) begin
      bcnt_q <= tag_pop ? '0 : bcnt_q + BW'(1);
    end
  end

  assign wr_valid_o = resp_valid_i || pad_fire;
  assign wr_pad_o   = !resp_valid_i;
  assign wr_row_o   = resp_valid_i ? tag_head[TW-1:LB] : row_q;
  assign wr_off_o   = tag_head[LB-1:0];
  assign wr_beat_o  = bcnt_q;
  assign wr_data_o  = resp_data_i;

  assign busy_o = active_q;
  assign done_o = active_q && !gen_q && tag_empty;
endmodule
